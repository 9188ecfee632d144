fn main() -> std::process::ExitCode {
    kit::run(auth::service())
}
