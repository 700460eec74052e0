//! Conversions of images: the IPFS image format
#![warn(missing_docs)]
