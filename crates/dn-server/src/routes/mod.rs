pub mod checkpoints;
pub mod jobs;
pub mod meta;
pub mod registry;
pub mod stream;
