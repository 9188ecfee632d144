fn main() -> std::process::ExitCode {
    kit::run::<broker::BrokerService>()
}
