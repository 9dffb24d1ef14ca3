//! Format inspection (being written).
