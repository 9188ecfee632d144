//! The repository's own files and the generator, checked without a container engine. One test
//! binary, so it links once.

mod ci_files;
mod migrations;
mod new_service;
