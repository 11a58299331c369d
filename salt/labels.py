"""Label conventions of the files UPP writes (FORMAT.md §1.4), shared by training and evaluation."""

# ftagTruthOriginLabel values 0..7: GN2's track-origin auxiliary task
TRACK_ORIGINS = (
    "Pileup",
    "Fake",
    "Primary",
    "FromB",
    "FromBC",
    "FromC",
    "FromTau",
    "OtherSecondary",
)
