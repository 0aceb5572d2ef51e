"""End-to-end fault matrix: the installed `d1deploy` command against the D1 emulator on
127.0.0.1, with every outcome judged by reading the emulator's SQLite files directly."""
