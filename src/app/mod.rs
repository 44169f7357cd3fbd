//! Applications on top of the stack. For now the simulated demo; the echo server, HTTP server and load
//! generator follow with the AF_XDP data path.

pub mod demo;
