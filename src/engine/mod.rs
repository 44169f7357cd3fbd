//! One core's protocol host (being written).
