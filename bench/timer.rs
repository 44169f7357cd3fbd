//! Timer wheel benchmark (being written).
fn main() {}
