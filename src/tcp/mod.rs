//! The TCP connection state machine (being written).
