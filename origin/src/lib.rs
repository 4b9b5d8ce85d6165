//! The origin: a native service and CLI that stores interactions, computes
//! recommendations, answers the edge's cache misses and publishes results to the
//! edge's KV and the secondary CDN.
//!
//! # Layout
//! - `model`: the interface between serving/publishing code and the recommendation models.

pub mod model;
