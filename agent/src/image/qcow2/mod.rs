//! qcow2 (being written).
