//! `monconn-forwarder`: see the crate's README, or `--help`.

fn main() -> std::process::ExitCode {
    monconn_forwarder::app::main()
}
