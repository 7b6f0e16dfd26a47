"""Registration: Learn2Reg files, displacement fields, MIND features, hybrid convex + Adam method."""
