import { storeContract } from "./contract/store.contract.ts";
import { storeSubjects } from "./contract/subjects.ts";

// The Store contract (opening, api keys, idempotency, retention) over every implementation (test/contract/subjects.ts).
for (const subject of storeSubjects()) storeContract(subject);
