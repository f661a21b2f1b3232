pub mod daemon;
pub mod data;
pub mod local;
pub mod registry;
pub mod train;
