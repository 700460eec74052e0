//! UnixFS importer and reader with CIDs identical to kubo
#![warn(missing_docs)]
