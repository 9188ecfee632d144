fn main() -> std::process::ExitCode {
    kit::run::<events::Events>()
}
