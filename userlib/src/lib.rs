//! pktslab.
