pub mod daemon;
pub mod data;
pub mod follow;
pub mod local;
pub mod model;
pub mod registry;
pub mod supervise;
pub mod train;
