pub mod jobs;
pub mod meta;
pub mod registry;
