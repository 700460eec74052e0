//! Registry client and image archives
#![warn(missing_docs)]
