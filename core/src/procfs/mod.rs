//! /proc parsers (in progress).
