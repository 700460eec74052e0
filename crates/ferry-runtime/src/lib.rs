//! Containers run by runc from OCI bundles
#![warn(missing_docs)]
