pub mod daemon;
pub mod data;
pub mod registry;
pub mod train;
