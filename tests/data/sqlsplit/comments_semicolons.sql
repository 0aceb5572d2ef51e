-- a comment; with a semicolon and a quote ' here
/* block; 'comment'
   over lines; */
SELECT 1 /* inline; */ + 2; -- trailing comment on the same line; it belongs to the next prelude
SELECT 3 -- comment inside the statement;
  + 4;
/* ; */ /* another; */
SELECT '/*' || '--';
SELECT 5 /* ' */;
-- the end; really
