//! Commands of the `phiwatch` binary that have their own module: argument parsing and
//! printing at the edge, the work in the library.

pub mod explain;
