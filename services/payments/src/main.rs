fn main() -> std::process::ExitCode {
    kit::run::<payments::Payments>()
}
