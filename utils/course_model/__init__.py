"""The course model: how it is trained (:mod:`.train`) and evaluated (:mod:`.evaluate`)."""
