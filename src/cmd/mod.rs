//! One module per subcommand.
pub mod doctor;
pub mod exec;
pub mod image;
pub mod policy;
