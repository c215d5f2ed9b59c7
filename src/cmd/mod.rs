//! One module per subcommand.
pub mod exec;
pub mod image;
pub mod policy;
