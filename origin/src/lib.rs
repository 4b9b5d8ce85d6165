//! The origin: a native service and CLI that stores interactions, computes
//! recommendations, answers the edge's cache misses and publishes results to the
//! edge's KV and the secondary CDN.
//!
//! # Layout
//! - `model`: the interface between serving/publishing code and the recommendation models.
//! - `engine`: the models (item/user kNN, EASE, content, popularity, hybrid), building by
//!   name, tuning, batch top-N.
//! - `eval`: offline evaluation (loaders, split, metrics) and the `eval`/`split` commands.

pub mod engine;
pub mod eval;
pub mod model;
