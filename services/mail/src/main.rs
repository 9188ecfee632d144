fn main() -> std::process::ExitCode {
    kit::run::<mail::Mail>()
}
