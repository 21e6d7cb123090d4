//! Harness additions for the load tests.
