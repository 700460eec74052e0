//! Layer application and the overlay snapshotter
#![warn(missing_docs)]
