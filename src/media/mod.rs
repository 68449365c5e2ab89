//! The media plane. Placeholder until the media kernels land.
