;;
SELECT 1; ; -- nothing
;
SELECT 2;
;
