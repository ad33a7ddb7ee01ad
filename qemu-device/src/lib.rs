//! pktaccel-device library.
