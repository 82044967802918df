//! Persistent reservation parameter data (SPC-4 §6.15, §6.16).
