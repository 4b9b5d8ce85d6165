//! Live events at the origin: the wire types, validation and interaction weights are the
//! contract's ([`contract::events`]), shared with the edge so both refuse the same bodies.

pub use contract::events::*;
