//! One module per subcommand.
pub mod agent;
pub mod artifacts;
pub mod attest;
pub mod cancel;
pub mod doctor;
pub mod exec;
pub mod image;
pub mod jobs;
pub mod logs;
pub mod policy;
pub mod remote;
pub mod run;
pub mod server;
pub mod status;
pub mod submit;
pub mod term;
pub mod verify;
