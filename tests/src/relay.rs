//! Harness additions for the relay tests.
