"""FCN-32s backbone plugin (PartMitosis / SegMitos backbone)."""
