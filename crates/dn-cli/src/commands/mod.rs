pub mod daemon;
pub mod registry;
pub mod train;
