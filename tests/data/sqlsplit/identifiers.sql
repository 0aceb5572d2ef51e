CREATE TABLE [odd;name] (`col;1` TEXT, "col"";2" TEXT, [x--y] TEXT);
SELECT `col;1`, "col"";2", [x--y] FROM [odd;name];
