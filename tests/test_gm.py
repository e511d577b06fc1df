from pipeline import gm


def test_sixteen_families_of_eight_programs_cover_the_gm_set():
    seen = set()
    for name in gm.FAMILIES:
        progs = gm.family_programs(name)
        assert len(progs) == 8
        seen |= progs
    assert seen == set(range(128))


def test_family_names_and_drums():
    assert gm.family(0, False) == "piano"
    assert gm.family(33, False) == "bass"
    assert gm.family(127, False) == "sound_effects"
    assert gm.family(0, True) == "drums"


def test_programs_for_combines_groups_families_and_numbers():
    keys = gm.programs_for(["guitar", 33, "drums"])
    assert keys == frozenset(range(24, 32)) | {33, gm.DRUM_KEY}
    assert gm.DRUM_KEY not in gm.programs_for(["pitched"])
    assert gm.DRUM_KEY in gm.programs_for(["all"])
