//! Harness additions for the export tests.
