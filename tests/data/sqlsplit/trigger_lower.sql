create table t (id integer primary key, v text);
create temp trigger if not exists t_ins after insert on t
begin
  update t set v = lower(v) where id = new.id;
  delete from t where v = '';
end;
Create Trigger t_upd Before Update On t Begin
  select raise(abort, 'no; way') where new.v is null;
End ;
create trigger t_del after delete on t begin select 1; end
;
insert into t (v) values ('begin'), ('end;');
