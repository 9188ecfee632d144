// jemalloc: on the hot path (create + confirm) glibc's malloc took a quarter of the process'
// CPU; with jemalloc the benchmark does 10–20% more round trips (docs/payments.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    kit::run::<payments::Payments>()
}
