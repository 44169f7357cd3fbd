//! The hierarchical timing wheel (being written).
