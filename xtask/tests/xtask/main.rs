//! The repository's own files and the generator, checked without a container engine, and one
//! service image built with buildah. One test binary, so it links once.

mod ci_files;
mod deploy;
mod images;
mod migrations;
mod new_service;
