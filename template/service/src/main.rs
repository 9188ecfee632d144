fn main() -> std::process::ExitCode {
    kit::run::<template::Template>()
}
