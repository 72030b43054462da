//! Image store (in progress).
