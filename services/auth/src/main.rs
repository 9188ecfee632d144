fn main() -> std::process::ExitCode {
    kit::run::<auth::Auth>()
}
