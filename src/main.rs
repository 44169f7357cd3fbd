//! The `xtcp` command.
fn main() {}
