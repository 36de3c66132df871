//! `monconn-forwarder`: see the crate's README, or `--help`.

// Every connection allocates a few blocks aligned to 128 bytes (tokio's
// task cells and I/O registrations), which glibc's `memalign` serves slowly;
// mimalloc serves them from its size classes, for more memory per idle
// connection (BENCHMARKS.md). Off by default: `--features mimalloc`.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    monconn_forwarder::app::main()
}
